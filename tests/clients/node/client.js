#!/usr/bin/env node
// A Node.js client of parley.v1.SessionService, written the way a Node backend would:
// @grpc/grpc-js + @grpc/proto-loader loading the repository's .proto files at run time.
//
// Usage: node client.js TARGET [API_KEY]
//   TARGET   host:port of parleyd (or PARLEYD_TARGET)
//   API_KEY  an API key "pk_..." (or PARLEYD_API_KEY)
//   PARLEYD_PROTO_DIR  the proto/ root (default: the repository's proto/ beside this file)
//
// Runs create -> get -> list (metadata filter) -> terminate, then checks that a second terminate
// is refused with FAILED_PRECONDITION and a call without a key with UNAUTHENTICATED. Prints ONE
// JSON object on stdout; exits 0 on success and non-zero (with {"ok": false, "error": ...}) on
// any failure. Works offline: the google/protobuf well-known types come with protobufjs.
'use strict';

const path = require('node:path');
const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const DEADLINE_MS = 10_000;

const target = process.argv[2] || process.env.PARLEYD_TARGET || '';
const apiKey = process.argv[3] || process.env.PARLEYD_API_KEY || '';
const protoDir = process.env.PARLEYD_PROTO_DIR || path.resolve(__dirname, '..', '..', '..', 'proto');

// proto-loader warns (on stderr) for every google/protobuf import it does not find in includeDirs
// before protobufjs serves its bundled copy; that is the expected path here, so hush only those.
process.removeAllListeners('warning');
process.on('warning', (w) => {
  if (!/google\/protobuf\/.*not found in any of the include paths/.test(String(w.message))) {
    process.stderr.write(`${w.name}: ${w.message}\n`);
  }
});

function fail(error, partial) {
  const out = { ok: false, error: String(error && error.stack ? error.stack : error), ...partial };
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(1);
}

function loadService() {
  const definition = protoLoader.loadSync('parley/v1/session_service.proto', {
    includeDirs: [protoDir],
    keepCase: true, // field names as in the .proto (agent_id), like the JSON the tests compare
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(definition);
  return pkg.parley.v1.SessionService;
}

function deadline() {
  return new Date(Date.now() + DEADLINE_MS);
}

function call(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: deadline() }, (err, response) => {
      if (err) {
        reject(err);
      } else {
        resolve(response);
      }
    });
  });
}

// Resolves with {code, name, details} of an expected error; rejects if the call succeeds.
function callExpectingError(client, method, request, metadata) {
  return call(client, method, request, metadata).then(
    (response) => {
      throw new Error(`${method} succeeded but an error was expected: ${JSON.stringify(response)}`);
    },
    (err) => ({
      code: err.code,
      name: grpc.status[err.code],
      details: err.details,
    }),
  );
}

function summary(session) {
  return {
    id: session.id,
    agent_id: session.agent_id,
    user_id: session.user_id,
    state: session.state,
    end_reason: session.end_reason,
    metadata: session.metadata,
    has_create_time: session.create_time != null,
    has_end_time: session.end_time != null,
  };
}

async function main() {
  if (!target) {
    fail('usage: node client.js TARGET [API_KEY] (or PARLEYD_TARGET / PARLEYD_API_KEY)');
  }
  if (!apiKey) {
    fail('no API key: pass it as the second argument or in PARLEYD_API_KEY');
  }
  const SessionService = loadService();
  // Never through an HTTP proxy from the environment: the target is a local server.
  const client = new SessionService(target, grpc.credentials.createInsecure(), {
    'grpc.enable_http_proxy': 0,
  });
  const md = new grpc.Metadata();
  md.set('x-api-key', apiKey);
  const run = crypto.randomUUID();
  const out = { ok: false, node: process.version, target, run };
  try {
    const created = await call(
      client,
      'CreateSession',
      {
        session: {
          agent_id: 'node-npc',
          user_id: 'node-user',
          situation: 'A Node.js client says hello.',
          metadata: { client: 'node', run },
        },
        request_id: run,
      },
      md,
    );
    out.create = {
      ...summary(created.session),
      access_token_prefix: created.access_token.slice(0, 4),
      grpc_target: created.connect ? created.connect.grpc_target : null,
    };
    const id = created.session.id;

    const got = await call(client, 'GetSession', { session_id: id }, md);
    out.get = summary(got.session);

    const listed = await call(client, 'ListSessions', { metadata: { run }, page_size: 10 }, md);
    out.list = {
      ids: listed.sessions.map((s) => s.id),
      next_page_token: listed.next_page_token,
    };

    const terminated = await call(client, 'TerminateSession', { session_id: id }, md);
    out.terminate = summary(terminated.session);

    out.terminate_again = await callExpectingError(client, 'TerminateSession', { session_id: id }, md);
    out.no_key = await callExpectingError(client, 'GetSession', { session_id: id }, new grpc.Metadata());
    out.ok = true;
  } catch (err) {
    client.close();
    fail(err, out);
  }
  client.close();
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((err) => fail(err, {}));
