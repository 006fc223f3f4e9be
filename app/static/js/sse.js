// Server-Sent Events read from a fetch() body: EventSource cannot send the
// Authorization header, so the job and batch streams are fetched with the token.

/** Parses a text/event-stream body (WHATWG rules), calling ``onEvent({type, data})``. */
export async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let dataLines = [];
  let type = "message";
  const dispatch = () => {
    if (dataLines.length) {
      const raw = dataLines.join("\n");
      let data = raw;
      try {
        data = JSON.parse(raw);
      } catch {
        // not JSON: keep the text
      }
      onEvent({ type, data });
    }
    dataLines = [];
    type = "message";
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") dispatch();
      else if (line.startsWith(":")) continue;
      else {
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let value = colon === -1 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") dataLines.push(value);
        else if (field === "event") type = value;
      }
    }
  }
  dispatch();
}
