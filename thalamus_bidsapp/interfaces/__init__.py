"""The app's nipype interfaces (the segmentation methods' own are in ``methods/``).

Each is a thin shell around plain functions in ``image/``, ``tools/`` and
``bidsio/``, so the work can be tested without nipype; results land in the
node's folder and ``publish`` copies them into the output dataset.
"""
