"""The neural (SadTalker networks) path of MSadTalker: pure per-avatar and per-frame work.

* ``runner``: the one callable through which this package runs a network (the pipeline adapts
  an ``engines`` EngineSet to it; this package never builds engines).
* ``coeffs``: the 70/73 coefficient rows and the mapping network's clamped 27-frame windows.
* ``source``: source preparation once per avatar (alignment, face recon, canonical and source
  keypoints), cached on disk by avatar + checkpoint fingerprint.
* ``lips``: the automatic choice of the lip keypoints (once per checkpoint) and reading the
  lip signal from mapping outputs.
* ``motion``: ExpNet -> lip rows / driving rows -> driving keypoints for one avatar.
* ``render``: generator source encoding and per-frame rendering (crop or pasted "full").
* ``offline``: the whole-clip reference the streaming stages are checked against.
"""
