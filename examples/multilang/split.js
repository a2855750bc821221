// A multi-lang bolt in Node.js with no library: Storm's protocol is this small.
// Messages are JSON, each followed by a line "end". Splits each sentence into words,
// emits every word anchored to its sentence, then acks the sentence.
"use strict";
const fs = require("fs");
const path = require("path");

function send(message) {
  process.stdout.write(JSON.stringify(message) + "\nend\n");
}

let handshaken = false;
function handle(message) {
  if (!handshaken) {  // {"conf": ..., "pidDir": ..., "context": ...}
    handshaken = true;
    fs.writeFileSync(path.join(message.pidDir, String(process.pid)), "");
    send({pid: process.pid});
    return;
  }
  if (message.task === -1 && message.stream === "__heartbeat") {
    send({command: "sync"});
    return;
  }
  if (message.stream === "__tick") {
    return;
  }
  for (const word of String(message.tuple[0]).split(/\s+/)) {
    if (word) {
      send({command: "emit", anchors: [message.id], tuple: [word], need_task_ids: false});
    }
  }
  send({command: "ack", id: message.id});
}

let buffer = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  buffer += chunk;
  let end;
  while ((end = buffer.indexOf("\nend\n")) >= 0) {
    const text = buffer.slice(0, end);
    buffer = buffer.slice(end + 5);
    if (text.trim()) {
      handle(JSON.parse(text));
    }
  }
});
process.stdin.on("end", () => process.exit(0));
