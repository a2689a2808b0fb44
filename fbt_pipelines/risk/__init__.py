"""Risk: drawdowns, VaR/CVaR and performance ratios of a daily equity curve."""
