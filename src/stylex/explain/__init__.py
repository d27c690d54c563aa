"""Explanations and their pictures: grids, GIFs, reports. The only package that touches PIL and HTML."""
