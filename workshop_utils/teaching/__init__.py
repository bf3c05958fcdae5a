"""Cells that only teach: one module per notebook (seed comparison tables, demonstrations, measured
numbers shown next to estimates). Nothing in the pipeline imports from here."""
