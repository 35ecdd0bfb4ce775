"""Plain-PyTorch evaluation (no Lightning imports): inference, scoring, reports,
visualisation and export."""
