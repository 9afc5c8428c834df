"""Tables, figures and report material built from evaluation summaries."""
