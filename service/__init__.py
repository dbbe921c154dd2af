"""rankloop service package."""
