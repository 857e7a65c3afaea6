"""convsparse."""
