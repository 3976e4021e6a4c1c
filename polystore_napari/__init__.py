"""polystore_napari: the napari plugin (stream receiver, store browser, reader and writer).

Built on ``polystore.streaming``; its contributions arrive with the napari issue.
"""
