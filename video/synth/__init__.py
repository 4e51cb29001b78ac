"""Generated action-recognition benchmark written as real H.264 mp4 files in the UCF-101 layout.

``condi-pipe synth`` calls :func:`generate_benchmark`. The result is read by the same extractor that reads
UCF-101: class folders of ``v_<Class>_gXX_cYY.mp4`` files plus ``classInd.txt``, ``trainlist01.txt`` and
``testlist01.txt`` with CRLF line endings, exactly as UCF-101 ships them. Two sidecars hold the ground truth for
tests and analysis and are never needed by the extractor: ``synth_clips.csv`` (kind of every 16-frame clip) and
``synth.json`` (the configuration).

Design (fixed; every number is a constant in ``config.py`` and a :class:`SynthConfig` field)
---------------------------------------------------------------------------------------------
* 10 classes (:data:`CLASSES`), each a motion of one foreground object over a textured background.
* Video ``i`` (0-based) has class ``i % 10`` and group ``i // 10 + 1`` within its class; every video is its own
  group (``cYY`` is always ``c01``). Per class, ``round(TEST_FRACTION * n)`` groups (at least 1 and at most
  ``n - 1`` when ``n >= 2``) are test groups, chosen by a permutation seeded with ``(seed, class)``.
* Everything random about video ``i`` comes from ``np.random.default_rng([seed, i, stream])``: the plan
  (length, clip kinds, appearance, motion) from stream 0, pixel noise from stream 1, the background texture
  from stream 2. Videos are independent of each other, of ``videos`` and of generation order, so the first
  ``n`` videos of a bigger run are byte-identical to a run of ``n`` videos, and parallel generation gives the
  same bytes.
* A video's clip count comes from its length profile (``LENGTH_PROFILES``): ``legacy`` draws
  ``randint(MIN_CLIPS, MAX_CLIPS)``; ``ucf101`` (the CLI's and the demo's default) and ``kinetics`` draw a
  log-normal duration matched to those datasets and round it to clips of ``CLIP_FRAMES`` frames.
  ``train_share < 1`` writes only that share of each class's train groups. Each clip is independently
  *informative* with probability ``P_INFORMATIVE`` or one of the :data:`AMBIGUOUS_KINDS` with equal shares of
  the rest. Draws with no informative clip are redrawn (so the informative share is a bit above
  ``P_INFORMATIVE`` for short videos).
* Appearance is sampled independently of the class: object shape (:data:`SHAPES`, all marked by an off-centre
  dot so rotation is visible), colour (kept at least :data:`MIN_OBJECT_CONTRAST` away from the background's
  colours), size (static sizes follow the same distribution as the Grow/Shrink sizes in a random frame),
  orientation; background texture (:data:`TEXTURES`) with its scale, angle, edge sharpness and two colours;
  global brightness gain and sensor noise.

Motion and continuity
---------------------
The labelled object has a motion clock ``tau`` that advances one tick per frame in the clips where it moves
(``informative``, ``occlusion``, ``noise``) and is held in the clips where it is still (``pan``,
``distractor``), so position, angle and oscillation phase evolve continuously across clips.

* Translate*: constant speed along the axis; the position wraps on a torus one object-radius larger than the
  frame on each side, so the object leaves one edge and re-enters at the opposite one still moving the same
  way. The other coordinate is fixed.
* Rotate*: fixed centre, constant angular speed (clockwise = the marker dot turns like a clock hand on the
  screen).
* Grow / Shrink: fixed centre; the size is reset at every clip: within a clip the radius goes geometrically
  from ``r / sqrt(ratio)`` to ``r * sqrt(ratio)`` (Grow) or back (Shrink). A held (still) object has radius ``r``.
* Oscillate*: ``centre + A * sin(2 pi tau / period + phase)`` along the axis. ``period <= 2 * (CLIP_FRAMES - 1)``,
  so every clip contains a reversal of direction and cannot be mistaken for a translation.

Ambiguous clip kinds (each with a visible cue)
----------------------------------------------
* ``pan``: the camera pans along one axis at a translation speed; the background slides, the object is held
  still in the frame (it looks like the object translating the opposite way relative to the scene).
* ``distractor``: the labelled object is held still and hidden behind an opaque block; a second object with
  fresh appearance performs one of the 9 *other* classes' motions (fully in frame) in front of it.
* ``occlusion``: the object performs its class motion behind a static fence of opaque bars (horizontal or
  vertical) covering most of the frame.
* ``noise``: the object performs its class motion, but contrast is crushed towards grey and heavy Gaussian
  noise is added.

Known single-frame cue (by design, like real footage): only Translate* objects are ever cut by the frame edge
(they wrap); objects of the other classes always stay fully in frame. An edge-cut object therefore says
"some translation" but not which direction.

Gaussian noise is drawn by inverse-CDF lookup (65536 quantiles) of 16-bit uniform draws: 3x faster than
``Generator.standard_normal`` and indistinguishable from it here (tails cut at about 4.3 sigma).

Modules
-------
* ``config``: the design constants and :class:`SynthConfig`.
* ``random_streams``: the per-video seeded generators and shared draw helpers.
* ``scene``: object looks, backgrounds and texture tiles, drawing objects.
* ``motions``: the ten class motions (sampling and per-frame states).
* ``ambiguity``: clip kinds and the parameters of the ambiguous clips.
* ``plan``: a video's complete plan and the train/test split.
* ``render``: plan -> uint8 frames, clip by clip.
* ``encoding``: the ffmpeg command and writing one mp4.
* ``benchmark``: :func:`generate_benchmark` (lists, sidecars) and reading the ground truth back.
"""

from __future__ import annotations

# The names other modules and the tests use; everything else is reached through its own module.
from condi_pipe.video.synth.ambiguity import sample_clip_kinds
from condi_pipe.video.synth.benchmark import (
    SynthSummary,
    benchmark_is_complete,
    generate_benchmark,
    read_clip_kinds,
    read_synth_config,
)
from condi_pipe.video.synth.config import (
    AMBIGUOUS_KINDS,
    CLASSES,
    CLIP_KINDS,
    DEFAULT_LENGTH_PROFILE,
    FRAME_HEIGHT,
    FRAME_WIDTH,
    LENGTH_PROFILES,
    MAX_CLIPS,
    MIN_CLIPS,
    MOVING_KINDS,
    SHAPES,
    SynthConfig,
)
from condi_pipe.video.synth.motions import motion_states
from condi_pipe.video.synth.plan import plan_video, split_test_groups
from condi_pipe.video.synth.render import render_video

__all__ = [
    "AMBIGUOUS_KINDS",
    "CLASSES",
    "CLIP_KINDS",
    "DEFAULT_LENGTH_PROFILE",
    "FRAME_HEIGHT",
    "FRAME_WIDTH",
    "LENGTH_PROFILES",
    "MAX_CLIPS",
    "MIN_CLIPS",
    "MOVING_KINDS",
    "SHAPES",
    "SynthConfig",
    "SynthSummary",
    "benchmark_is_complete",
    "generate_benchmark",
    "motion_states",
    "plan_video",
    "read_clip_kinds",
    "read_synth_config",
    "render_video",
    "sample_clip_kinds",
    "split_test_groups",
]
