// AudioWorklet: whatever the capture rate, emit PCM16 LE mono at 16 kHz in 500 ms chunks.
//
// Runs on the audio thread. Channels are mixed to mono, then each output sample
// is the mean of the input samples since the previous one (a box filter: a
// cheap anti-alias low-pass, good enough for speech). `sampleRate` is the
// AudioContext's rate, a global of the worklet scope.

class Pcm16Downsampler extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.chunkSamples = opts.chunkSamples || 8000;
    this.step = sampleRate / (opts.targetRate || 16000); // input samples per output sample
    this.phase = 0;
    this.sum = 0;
    this.count = 0;
    this.out = new Int16Array(this.chunkSamples);
    this.fill = 0;
    this.peak = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true; // nothing connected (yet)
    const frames = channels[0].length;
    const n = channels.length;
    for (let i = 0; i < frames; i++) {
      let x = 0;
      for (let c = 0; c < n; c++) x += channels[c][i];
      this.sum += x / n;
      this.count += 1;
      this.phase += 1;
      if (this.phase >= this.step) {
        this.phase -= this.step;
        this.emit(this.sum / this.count);
        this.sum = 0;
        this.count = 0;
      }
    }
    return true;
  }

  emit(value) {
    const v = Math.max(-1, Math.min(1, value));
    const a = Math.abs(v);
    if (a > this.peak) this.peak = a;
    this.out[this.fill++] = v < 0 ? v * 0x8000 : v * 0x7fff;
    if (this.fill === this.chunkSamples) {
      // the buffer is transferred, not copied: start a new one
      this.port.postMessage({ pcm: this.out.buffer, peak: this.peak }, [this.out.buffer]);
      this.out = new Int16Array(this.chunkSamples);
      this.fill = 0;
      this.peak = 0;
    }
  }
}

registerProcessor("pcm16-downsampler", Pcm16Downsampler);
