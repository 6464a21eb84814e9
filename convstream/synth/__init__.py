"""The synthetic world: platform users, advertisers, ad traffic and conversions, with truth."""
