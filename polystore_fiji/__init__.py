"""polystore_fiji: the Fiji/ImageJ bridge (streams into hyperstacks, ROIs and results back).

Built on ``polystore.streaming``; its code arrives with the Fiji issue.
"""
