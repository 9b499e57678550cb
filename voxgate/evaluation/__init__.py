"""Offline evaluation of voxgate: report plots over target and non-target trial scores."""
