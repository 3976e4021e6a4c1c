"""OME-NGFF (OME-Zarr) metadata and the screening-plate layout, used by the zarr backend."""
