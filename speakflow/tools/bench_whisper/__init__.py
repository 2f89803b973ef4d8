"""``speakflow bench-whisper``: local Whisper's streaming quality, latency and capacity.

Streams the speech corpus (``shared/audio``) through a real ``speakflow
serve`` process running ``whisper_local``, with real WebSocket clients at
real-time pace (500 ms chunks, like SpeakFlow Desktop), for each requested
number of concurrent streams, and reports per round:

* **WER**: the finals of each stream against the manifest's reference text,
  next to the *offline* WER of the same model on the same files (each file
  transcribed whole by faster-whisper, greedy, in this process), both after
  :func:`speakflow.wer.normalize`.
* **Final latency**: for every spoken turn, the time from its end (manifest
  time on the stream's timeline, mapped to the wall clock by the real-time
  pace) to the arrival at the client of the last final that covers it;
  p50/p95/max. Turns that never got a final are counted as missed; finals
  that cover no turn (text from silence) as spurious.
* **Partials**: how often they came while someone spoke, how soon after the
  turn started, and how many revised words an earlier partial had shown
  (flicker; the stable-prefix policy keeps it at 0). Finals never repeat a
  segment id.
* **Load**: the model's real-time factor (model busy seconds per audio
  second, from /metrics), server CPU (% of one core) and machine CPU,
  batches, dropped partials, the largest queue and the longest wait of a
  final seen while polling /metrics once a second (a backlog that grows shows
  there, and as later turns' latency rising over earlier ones').

Workloads: ``meeting`` (default): streams are the two tracks of the corpus
meeting, two per session like the desktop's microphone + system (an odd
count leaves the last session microphone-only); ``utterances``: each stream
is its own session playing the single-sentence files back to back.
``--corpus es`` plays the Spanish meeting and sentences instead (a
multilingual model; sessions send no ``language`` unless ``--language``, as
the desktop, and the offline baseline detects it per file the same way). With
``--json`` each round also carries every stream's final text and languages.
Sessions start ``--stagger`` seconds apart so their turns do not all end on
the same chunk.

The modules, in the order a run uses them:

============  ================================================================
``corpus``    the workload: each stream's audio and spoken turns (manifest)
``baseline``  the offline WER: each file transcribed whole by the same model
``rounds``    one round: sessions at real-time pace, /metrics polled
``analysis``  one stream's record against its turns: latency, partials
``report``    the round's lines and the targets checked
``cli``       ``speakflow bench-whisper``: options, the server, the rounds
============  ================================================================
"""
