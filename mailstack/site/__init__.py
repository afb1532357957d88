"""The site file: model, loader and published schema."""
