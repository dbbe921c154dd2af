"""rankloop policy package."""
