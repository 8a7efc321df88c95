#!/usr/bin/env node
// A Node.js USER on parley.v1.SessionService/Interact, written the way a Node game backend or
// tool would: @grpc/grpc-js + @grpc/proto-loader loading the repository's .proto files at run time.
//
// Usage: node interact.js TARGET SESSION_ID ACCESS_TOKEN [TEXT]
//   TARGET        host:port of parleyd (or PARLEYD_TARGET)
//   SESSION_ID    "sess_..." of an AGENT_MODE_EXTERNAL session with an AGENT attached
//   ACCESS_TOKEN  the "pat_..." token CreateSession returned for it
//   TEXT          what the user types (default "hello from node")
//   PARLEYD_PROTO_DIR  the proto/ root (default: the repository's proto/ beside this file)
//
// Joins as ROLE_USER, waits for `opened`, sends TEXT, waits for the agent's complete reply (the
// final text from ROLE_AGENT and EVENT_TYPE_RESPONSE_DONE), sends `leave` and waits for the server
// to close the stream. Prints ONE JSON object on stdout:
//   {ok, opened_state, reply_text, interaction_id, events: [...], kinds: [...], sequences: [...],
//    sequence_ok, close_code}
// Exits 0 on success, 1 on any failure, 2 when the whole run takes longer than 20 s (then with
// {"ok": false, "error": ...} and whatever was seen so far).
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const OVERALL_TIMEOUT_MS = 20_000;

const target = process.argv[2] || process.env.PARLEYD_TARGET || '';
const sessionId = process.argv[3] || '';
const accessToken = process.argv[4] || '';
const userText = process.argv[5] || 'hello from node';
const protoDir = process.env.PARLEYD_PROTO_DIR || path.resolve(__dirname, '..', '..', '..', 'proto');

// proto-loader warns (on stderr) for every google/protobuf import it does not find in includeDirs
// before protobufjs serves its bundled copy; that is the expected path here, so hush only those.
process.removeAllListeners('warning');
process.on('warning', (w) => {
  if (!/google\/protobuf\/.*not found in any of the include paths/.test(String(w.message))) {
    process.stderr.write(`${w.name}: ${w.message}\n`);
  }
});

const out = {
  ok: false,
  node: process.version,
  target,
  session_id: sessionId,
  opened_state: null,
  participant_id: null,
  reply_text: null,
  interaction_id: null,
  events: [],
  kinds: [],
  sequences: [],
  sequence_ok: false,
  close_code: null,
};

let finished = false;

function finish(code, error) {
  if (finished) {
    return;
  }
  finished = true;
  out.sequence_ok = out.sequences.length > 0 && out.sequences.every((s, i) => s === i + 1);
  if (error !== undefined) {
    out.ok = false;
    out.error = String(error && error.stack ? error.stack : error);
  }
  // Exit only once stdout is flushed (it may be a pipe).
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(code));
}

function loadService() {
  const definition = protoLoader.loadSync('parley/v1/session_service.proto', {
    includeDirs: [protoDir],
    keepCase: true, // field names as in the .proto (session_id)
    longs: Number, // uint64 sequence: small numbers, compared as numbers
    enums: String,
    defaults: true,
    oneofs: true, // the set member of each oneof is named in `payload`
  });
  const pkg = grpc.loadPackageDefinition(definition);
  return pkg.parley.v1.SessionService;
}

function main() {
  if (!target || !sessionId || !accessToken) {
    finish(1, 'usage: node interact.js TARGET SESSION_ID ACCESS_TOKEN [TEXT]');
    return;
  }
  const timer = setTimeout(() => {
    finish(2, `timeout: no complete exchange within ${OVERALL_TIMEOUT_MS} ms`);
  }, OVERALL_TIMEOUT_MS);
  timer.unref();

  const SessionService = loadService();
  // Never through an HTTP proxy from the environment: the target is a local server.
  const client = new SessionService(target, grpc.credentials.createInsecure(), {
    'grpc.enable_http_proxy': 0,
  });
  const call = client.Interact({ deadline: new Date(Date.now() + OVERALL_TIMEOUT_MS) });
  let textSent = false;
  let replyDone = false;
  let leaving = false;

  const fail = (error) => {
    clearTimeout(timer);
    call.cancel();
    client.close();
    finish(1, error);
  };

  call.on('data', (msg) => {
    out.sequences.push(Number(msg.sequence));
    const kind = msg.payload;
    out.kinds.push(kind === 'event' ? msg.event.type : kind);
    switch (kind) {
      case 'opened':
        if (textSent) {
          fail(new Error('a second `opened` on one stream'));
          return;
        }
        out.opened_state = msg.opened.session ? msg.opened.session.state : null;
        out.participant_id = msg.opened.participant_id;
        textSent = true;
        call.write({ text: { text: userText } });
        break;
      case 'event':
        out.events.push(msg.event.type);
        if (msg.event.type === 'EVENT_TYPE_RESPONSE_DONE' && out.reply_text !== null) {
          replyDone = true;
        }
        break;
      case 'text':
        if (msg.text.is_final && msg.text.from_role === 'ROLE_AGENT') {
          out.reply_text = msg.text.text;
          out.interaction_id = msg.text.interaction_id;
        }
        break;
      case 'error':
        fail(new Error(`StreamError from the server: ${JSON.stringify(msg.error)}`));
        return;
      default:
        break;
    }
    if (replyDone && !leaving) {
      leaving = true;
      call.write({ leave: { reason: 'node client done' } });
      call.end();
    }
  });

  call.on('status', (status) => {
    out.close_code = grpc.status[status.code];
    clearTimeout(timer);
    client.close();
    if (!leaving) {
      finish(1, `stream closed before the reply: ${out.close_code}: ${status.details}`);
    } else if (status.code !== grpc.status.OK) {
      finish(1, `stream closed with ${out.close_code} after leave: ${status.details}`);
    } else {
      out.ok = true;
      finish(0);
    }
  });

  // An error status arrives here as well as in 'status'; 'status' decides.
  call.on('error', () => {});

  call.write({
    join: {
      session_id: sessionId,
      access_token: accessToken,
      role: 'ROLE_USER',
      audio_format: { sample_rate: 16000, chunk_ms: 20 },
      client: { name: 'parleyd-node-interact-test', version: '0.0.0', engine: 'node' },
    },
  });
}

try {
  main();
} catch (err) {
  finish(1, err);
}
