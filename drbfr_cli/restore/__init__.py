"""`drbfr restore` as a library.

jobs.py     the frozen records the stages hand each other (ImageJob, FaceJob)
options.py  RestoreOptions (what a run does) and RestoreTools (the models it uses)
plan.py     stage 1: output paths, clashes, per-face seeds
prepare.py  stage 2: skip finished outputs, read, detect, align
batch.py    stage 3: aligned crops through the restorer in batches (halving on OOM)
compose.py  stage 4: restored faces pasted back onto the upscaled background
score.py    stage 5: --metrics (NIQE, identity) of each face
encode.py   stage 6: the output files as bytes
finish.py   render (stages 4-6) and write: the record first, then the files
run.py      the threaded run: reader / restorer / writer joined by bounded queues
tools.py    building the restorer, detector, background upsampler and face parser
restorer.py the FaceRestorer protocol and its restorers (a bundle on a device, identity)
background.py  background upsamplers (Real-ESRGAN via spandrel, Lanczos, resize)
report.py   report.json / CSV records and summary
"""
