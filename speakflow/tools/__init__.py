"""Everything that is not the server: clients, benchmarks and the commands that run them.

The server never imports this package (``tests/unit/test_tools_apart.py``
checks it); these modules import the server's freely, to start one in
process or to speak its protocol. Each ``speakflow`` command other than
``serve`` and ``transcript`` lives here:

=================  ==========================================================
``cli``            ``speakflow stream`` and ``speakflow bench``: their options
``stream``         the reference desktop client (one WAV per source)
``display``        what it shows: finals, the live line, the summary
``ws``             the WebSocket client the tools and the tests connect with
``rawws``          a bare RFC 6455 client for the load generator
``bench``          ``speakflow bench``: echo-vendor load, round trip, CPU
``bench_store``    ``speakflow bench --compare-store``: the record off and on
``bench_echo``     ``speakflow bench-echo``: echo cancellation and WER
``bench_whisper``  ``speakflow bench-whisper``: local Whisper at real time
``compare``        ``speakflow compare``: WER, latency and cost per provider
``compare_report``  its results per provider: table, JSON, HTML
``emulate``        ``speakflow emulate <vendor>``: a vendor emulator
``procs``          child processes, /proc sampling, a tiny HTTP GET
``args``           option parsing the commands share
=================  ==========================================================

Shared with the server, and so outside this package: :mod:`speakflow.audio`
(the audio format), :mod:`speakflow.wav` (the WAV reader),
:mod:`speakflow.stats` (percentiles), :mod:`speakflow.wer`.
"""
