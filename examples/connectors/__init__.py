"""Example identity connectors a province adds as its own module plus a [[connectors]] entry.

See docs/connectors.md; ``neighbour_gateway`` is a login at a neighbouring
province's gateway (an OpenID Connect relying party).
"""
