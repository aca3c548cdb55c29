"""Use cases: each function opens one transaction, applies domain rules, records what happened."""
