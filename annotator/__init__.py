"""rankloop annotator package."""
