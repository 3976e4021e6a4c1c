"""OME-NGFF (OME-Zarr) metadata, used by the zarr backend (where a path sits on a plate is
:mod:`polystore.plates`)."""
