"""Analytics: metrics, funnels, event streams and their record formats."""
