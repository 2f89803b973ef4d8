import trio

from speakflow.wer import wer

from ..client import read_wav


async def test_single_utterance(server, audio_dir, manifest):
    utt = manifest["utterances"][0]
    pcm = read_wav(audio_dir / utt["file"])
    with trio.fail_after(60):
        async with server.client() as c:
            await c.start("s1")
            await c.expect("session_started")
            await c.stream("s1", "microphone", pcm, pace=0.05)
            await c.stop("s1")
            msgs = await c.until("session_ended")
    finals = [m for m in msgs if m["type"] == "transcript" and m["is_final"]]
    print(msgs)
    text = " ".join(m["text"] for m in finals)
    assert wer(utt["text"], text) <= 0.15, text
