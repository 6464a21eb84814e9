"""The identity graph: an advertiser's identifiers linked by the events that carried them.

``nodes`` names the nodes an event gives, ``adjacency`` keeps one node's links (a row of the
table keyed by node), ``expand`` walks from a conversion's own nodes to what they reach.
"""
