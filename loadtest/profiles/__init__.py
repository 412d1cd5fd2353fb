"""Example `loadtest sip --profile` files (data only)."""
