// Send bodies with the official Node.js client, then consume them with its SimpleConsumer or PushConsumer and
// report which received messages the client flagged corrupted (its body digest check).
// Usage: node digest.js ENDPOINTS TOPIC GROUP simple|push BODIES_JSON
// BODIES_JSON: a JSON array of body strings. Prints one JSON line {sent: [...ids], received: [...ids],
// corrupted: [...ids]}. The consumer starts before the sends (a new group starts at the end of each queue).
'use strict';
const { Producer, SimpleConsumer, PushConsumer, ConsumeResult } = require('rocketmq-client-nodejs');

async function main() {
  const [endpoints, topic, group, mode, bodiesJson] = process.argv.slice(2);
  const bodies = JSON.parse(bodiesJson);
  const received = new Set();
  const corrupted = new Set();
  const seen = (m) => { received.add(m.messageId); if (m.corrupted) corrupted.add(m.messageId); };
  const subscriptions = new Map().set(topic, '*');
  let consumer;
  if (mode === 'push') {
    consumer = new PushConsumer({
      endpoints, consumerGroup: group, subscriptions,
      messageListener: { consume: (m) => { seen(m); return ConsumeResult.SUCCESS; } },
    });
  } else {
    consumer = new SimpleConsumer({ endpoints, consumerGroup: group, subscriptions, awaitDuration: 1000 });
  }
  await consumer.startup();
  if (mode !== 'push') await consumer.receive(16, 20000); // the group's first receive: its start position
  const producer = new Producer({ endpoints, requestTimeout: 5000 });
  await producer.startup();
  const sent = [];
  for (const body of bodies) {
    const receipt = await producer.send({ topic, tag: 'digest', body: Buffer.from(body) });
    sent.push(receipt.messageId);
  }
  await producer.shutdown();
  const deadline = Date.now() + 60000;
  while (sent.some((id) => !received.has(id)) && Date.now() < deadline) {
    if (mode === 'push') {
      await new Promise((resolve) => setTimeout(resolve, 100));
    } else {
      for (const m of await consumer.receive(16, 20000)) {
        seen(m);
        await consumer.ack(m);
      }
    }
  }
  // a PushConsumer's shutdown waits out its receives in flight (long polls of up to 30 s); the exit ends them
  if (mode !== 'push') await consumer.shutdown();
  console.log(JSON.stringify({ sent, received: [...received], corrupted: [...corrupted] }));
}

main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
