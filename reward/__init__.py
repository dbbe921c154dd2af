"""rankloop reward package."""
