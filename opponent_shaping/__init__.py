"""Advantage Alignment (arXiv 2406.14662): opponent shaping in IPD, Coin Game and Negotiation."""
