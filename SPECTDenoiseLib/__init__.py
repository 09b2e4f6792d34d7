"""SPECTDenoiseLib: the Qt-free core of SPECTDenoise.

Deep-learning denoising of low-count SPECT, with the I/O, simulation, metrics, model hub, inference engine,
background worker and command line that the 3D Slicer module and headless users share.

Array convention everywhere: numpy arrays are indexed [z, y, x] (SimpleITK's ``GetArrayFromImage`` order);
physical geometry (origin, spacing, direction) is kept in LPS, as on disk and in ITK.
"""

__version__ = "0.1.0"
