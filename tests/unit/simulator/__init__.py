"""The seed-driven simulator of the saga core under crashes and a faulty broker (R18)."""
