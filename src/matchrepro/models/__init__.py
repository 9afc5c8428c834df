"""Network models (one readable file per paper) and checkpoint loading."""
