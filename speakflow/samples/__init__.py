"""Two short clips shipped with the package, so a first ``speakflow stream`` needs no corpus.

``hello_en.wav``: "Good morning everyone, thanks for joining the weekly planning
call." (flite voice slt). ``hola_es.wav``: "Buenos días a todos, gracias por venir a
la reunión de planificación." (espeak-ng, es). Both 16 kHz mono PCM16, from the
project's synthetic test corpus.
"""

from __future__ import annotations

from pathlib import Path

SAMPLES = {
    "en": Path(__file__).with_name("hello_en.wav"),
    "es": Path(__file__).with_name("hola_es.wav"),
}
