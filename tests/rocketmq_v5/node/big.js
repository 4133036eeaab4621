// Large bodies with the official Node.js client. Usage: node big.js ENDPOINTS TOPIC GROUP.
// Sends a body of exactly maxMessageSize (4 MiB, tag `big`: the test receives it with the Python client, since
// this client's gRPC channel takes responses of at most 4 MiB in all), one byte more (refused), and one of
// 4 MiB - 64 KiB (tag `near`), which it receives itself. Prints one JSON line {big, near, received: [...ids],
// same: bool (the received near body equals the sent one), tooBig: the error of the larger send ('' if none)}.
'use strict';
const { Producer } = require('rocketmq-client-nodejs');
const { started, drain, run } = require('./lib');

const pattern = (n) => { const b = Buffer.alloc(n); for (let i = 0; i < n; i++) b[i] = i % 256; return b; };

run(async () => {
  const [endpoints, topic, group] = process.argv.slice(2);
  const body = pattern(4 << 20);
  const nearBody = pattern((4 << 20) - (64 << 10));
  const producer = new Producer({ endpoints, requestTimeout: 10000 });
  await producer.startup();
  await producer.send({ topic, body: Buffer.from('creates the topic') });
  const consumer = await started(endpoints, group, topic, 'near');
  const big = (await producer.send({ topic, tag: 'big', body })).messageId;
  const near = (await producer.send({ topic, tag: 'near', body: nearBody })).messageId;
  let tooBig = '';
  try {
    await producer.send({ topic, body: Buffer.concat([body, Buffer.from('x')]) });
  } catch (err) {
    tooBig = String(err && err.message ? err.message : err);
  }
  await producer.shutdown();
  const got = await drain(consumer, [near]);
  await consumer.shutdown();
  return { big, near, received: [...got.keys()], same: got.has(near) && got.get(near).body.equals(nearBody), tooBig };
});
