"""Static HTML pages: the before/after gallery of restore, the eval page."""
