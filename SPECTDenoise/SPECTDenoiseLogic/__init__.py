"""Qt-free MRML logic of the SPECT Denoise Slicer module.

Every function takes the MRML scene (or nodes) as arguments and never touches ``slicer.app`` or Qt, so the same
code runs in 3D Slicer and in plain Python with the ``slicer-core`` wheel (where the tests drive it).

Conventions: MRML geometry is RAS, files and SimpleITK images are LPS (x and y flip sign); arrays are indexed
[z, y, x] (= [k, j, i]) in both.
"""
