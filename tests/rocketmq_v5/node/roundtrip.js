// Send N messages with the official Node.js client, then receive and ack them with its SimpleConsumer.
// Usage: node roundtrip.js ENDPOINTS TOPIC GROUP N ; prints one JSON line {sent: [...ids], received: [...ids]}.
'use strict';
const { Producer, SimpleConsumer } = require('rocketmq-client-nodejs');

async function main() {
  const [endpoints, topic, group, count] = process.argv.slice(2);
  const n = Number(count);
  const producer = new Producer({ endpoints, requestTimeout: 5000 });
  await producer.startup();
  const sent = [];
  for (let i = 0; i < n; i++) {
    const receipt = await producer.send({ topic, tag: 'node', keys: [`k${i}`], body: Buffer.from(`node ${i}`) });
    sent.push(receipt.messageId);
  }
  await producer.shutdown();
  const consumer = new SimpleConsumer({
    endpoints, consumerGroup: group, subscriptions: new Map().set(topic, '*'), awaitDuration: 2000,
  });
  await consumer.startup();
  const received = new Set();
  const deadline = Date.now() + 60000;
  while (received.size < n && Date.now() < deadline) {
    const messages = await consumer.receive(16, 20000);
    for (const m of messages) {
      received.add(m.messageId);
      await consumer.ack(m);
    }
  }
  await consumer.shutdown();
  console.log(JSON.stringify({ sent, received: [...received] }));
}

main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
