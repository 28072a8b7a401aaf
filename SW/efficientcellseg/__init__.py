"""EfficientCellSeg: volumetric cell segmentation with Context Aware Pseudocoloring (Wagner & Rohr).

A faithful, tested re-implementation for Cell Tracking Challenge (CTC) data. The library is importable;
the command line (``python -m efficientcellseg``) is a thin layer over it.
"""

__version__ = "0.1.0"
