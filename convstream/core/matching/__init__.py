"""The match model: which platform user made a conversion, and how sure we are.

- ``candidates.py``: who is worth probing (deterministic users, then the likeliest others);
- ``features.py``: features of a (conversion, candidate) pair from lookup and probe answers;
- ``pair.py``: online River pair scorer with a cold-start prior;
- ``conversion.py``: P(best candidate is the converter), corrected for non-platform converters;
- ``label_shift.py``: EM estimate of the non-platform share from unlabelled conversions;
- ``deterministic.py``: click / em / ph / dev / ext picks and their Beta-posterior confidence;
- ``calibration.py``: online Platt, binned, Beta and Bayesian-logistic calibrators;
- ``progressive.py``: progressive AUC, log loss and sliding-window ECE;
- ``model.py``: ``MatchModel`` (decide, learn, checkpoint); ``baseline.py``: rule baselines;
- ``explain.py``: the short reasons written into each label.
"""
