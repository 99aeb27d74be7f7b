"""`drbfr restore` as a library.

stages.py   the stages over small job objects (plan, prepare, restore, finish)
run.py      the threaded run: reader / restorer / writer joined by bounded queues
tools.py    building the restorer, detector, background upsampler and face parser
restorer.py the FaceRestorer protocol and its restorers (a bundle on a device, identity)
background.py  background upsamplers (Real-ESRGAN via spandrel, Lanczos, resize)
report.py   report.json / CSV records and summary
"""
