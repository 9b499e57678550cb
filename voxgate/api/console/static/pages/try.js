// Try it: the browser microphone as a phone call. Audio goes to the WebSocket door as Twilio Media Streams
// frames (G.711 µ-law, 8 kHz), the same as a contact centre's; the page then polls enroll or verify on the
// stream's uuid, as an integration would, showing net speech against the minimum and the live verdict.
import { api, errorText, field, fmt, h, session, statusLine, verdictBadge } from "../lib.js";

const RATE_HZ = 8000;

/** G.711 µ-law of one sample in [-1, 1] (ITU-T G.711, as the server's numpy tables). */
function mulaw(sample) {
  const BIAS = 0x84, CLIP = 32635;
  let pcm = Math.max(-32768, Math.min(32767, Math.round(sample * 32767)));
  const sign = pcm < 0 ? 0x80 : 0;
  if (sign) pcm = -pcm;
  if (pcm > CLIP) pcm = CLIP;
  pcm += BIAS;
  let exponent = 7;
  for (let mask = 0x4000; (pcm & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
  const mantissa = (pcm >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

function base64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i++) text += String.fromCharCode(bytes[i]);
  return btoa(text);
}

export async function render(root) {
  const externalId = h("input", { name: "external_id", required: true, maxlength: 256, value: "my-voice" });
  const mode = h("select", { name: "mode" }, h("option", { value: "enroll" }, "Enroll my voice"), h("option", { value: "verify" }, "Verify me"));
  const start = h("button", { type: "submit" }, "Start microphone");
  const stopButton = h("button", { type: "button", className: "secondary", disabled: true }, "Stop");
  const status = statusLine();
  const bar = h("span", {});
  const meter = h("div", { className: "meter", role: "progressbar", "aria-label": "Net speech", "aria-valuemin": "0", "aria-valuemax": "20", "aria-valuenow": "0" }, bar);
  const speech = h("p", { id: "try-speech" }, "Net speech: –");
  const verdict = h("p", { id: "try-verdict", className: "big-verdict", "aria-live": "polite" });
  const llr = h("p", { id: "try-llr" });
  let call = null;

  function show(speechS, fullS, text) {
    meter.setAttribute("aria-valuemax", String(fullS));
    meter.setAttribute("aria-valuenow", speechS.toFixed(1));
    bar.style.width = `${Math.min(100, (100 * speechS) / fullS)}%`;
    meter.classList.toggle("full", speechS >= fullS);
    speech.textContent = `Net speech: ${fmt.seconds(speechS)} ${text}`;
  }

  async function poll() {
    if (!call) return;
    const body = { uuid: call.uuid, external_id: call.externalId };
    try {
      if (call.mode === "enroll") {
        const answer = await api("/api/v2/enroll", { method: "POST", json: body });
        show(answer.speech_length, answer.required_speech_length, `of the ${fmt.seconds(answer.required_speech_length)} an enrollment needs`);
        if (answer.result === "created") {
          status.set(`Enrolled “${call.externalId}” from ${fmt.seconds(answer.speech_length)} of net speech. Now choose “Verify me” (or let someone else try).`);
          await stop();
          return;
        }
      } else {
        const answer = await api("/api/v2/verify", { method: "POST", json: body });
        show(answer.speech_length, 20, `(a verdict from ${fmt.seconds(answer.required_speech_length)}; it firms up as the bar fills to 20 s)`);
        if (verdict.dataset.result !== answer.result) { // announced to screen readers: only changes
          verdict.dataset.result = answer.result;
          verdict.replaceChildren(verdictBadge(answer.result));
        }
        llr.textContent = answer.score === null ? "" : `LLR ${fmt.llr(answer.score)} (profile ${answer.profile})`;
      }
    } catch (error) {
      status.set(errorText(error), "error");
      await stop();
      return;
    }
    if (call) call.timer = setTimeout(poll, 500);
  }

  async function stop() {
    if (!call) return;
    const { socket, context, stream, timer, sid } = call;
    call = null;
    clearTimeout(timer);
    try { socket.send(JSON.stringify({ event: "stop", streamSid: sid, stop: { accountSid: "", callSid: "" } })); } catch { /* closed */ }
    socket.close();
    stream.getTracks().forEach((t) => t.stop());
    await context.close();
    start.disabled = false;
    stopButton.disabled = true;
  }

  const form = h("form", { className: "panel" },
    h("div", { className: "row" }, field("Your id", externalId), field("What to do", mode), start, stopButton),
    status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (call) return;
    start.disabled = true;
    verdict.replaceChildren();
    delete verdict.dataset.result;
    llr.textContent = "";
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: true } });
      const context = new AudioContext({ sampleRate: RATE_HZ }); // the browser resamples the microphone
      await context.audioWorklet.addModule(new URL("../capture-worklet.js", import.meta.url));
      const capture = new AudioWorkletNode(context, "voxgate-capture");
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const socket = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(session.token)}`);
      const uuid = crypto.randomUUID();
      const sid = uuid;
      call = { socket, context, stream, uuid, sid, mode: mode.value, externalId: externalId.value, timer: 0 };
      await new Promise((resolve, reject) => { socket.onopen = resolve; socket.onerror = () => reject(new Error("the WebSocket door refused the connection")); });
      socket.send(JSON.stringify({ event: "connected", protocol: "Call", version: "1.0.0" }));
      socket.send(JSON.stringify({ event: "start", streamSid: sid, start: { streamSid: sid, tracks: ["inbound"],
        mediaFormat: { encoding: "audio/x-mulaw", sampleRate: RATE_HZ, channels: 1 }, customParameters: { uuid, source: "console try-it" } } }));
      socket.onmessage = (message) => {
        const reply = JSON.parse(message.data);
        if (reply.status >= 400) status.set(`${reply.status} ${reply.msg}${reply.detail ? `: ${reply.detail}` : ""}`, "error");
      };
      socket.onclose = () => { if (call) { status.set("The connection closed.", "error"); stop(); } };
      capture.port.onmessage = ({ data }) => {
        if (socket.readyState !== WebSocket.OPEN) return;
        const bytes = new Uint8Array(data.length);
        for (let i = 0; i < data.length; i++) bytes[i] = mulaw(data[i]);
        socket.send(JSON.stringify({ event: "media", streamSid: sid, media: { track: "inbound", payload: base64(bytes) } }));
      };
      context.createMediaStreamSource(stream).connect(capture);
      start.disabled = true;
      stopButton.disabled = false;
      status.set(mode.value === "enroll" ? "Listening: speak freely until the bar is full (20 s of net speech)." : "Listening: speak, and watch the verdict.", "busy");
      call.timer = setTimeout(poll, 1000);
    } catch (error) {
      status.set(`Could not start: ${errorText(error)}`, "error");
      if (call) await stop(); else start.disabled = false;
    }
  });
  stopButton.addEventListener("click", () => { status.set("Stopped."); stop(); });

  root.append(
    h("p", {}, "Speak into your microphone: the browser sends your voice to voxgate like a phone call (8 kHz µ-law over the WebSocket door). Enroll first, then verify; someone else speaking should get “not verified”. ",
      "To enroll from recordings instead, use ", h("a", { href: "#/voiceprints" }, "Voiceprints"), "."),
    form,
    h("div", { className: "panel" }, h("h2", {}, "Net speech"), meter, speech, h("h2", {}, "Verdict"), verdict, llr),
  );
  return () => { stop(); };
}
