"""Studies: methods x seeds grids of ordinary train runs, and their report."""
