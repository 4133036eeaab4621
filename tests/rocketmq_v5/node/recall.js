// Send two delayed messages with the official Node.js client, recall the first, then receive with a group that
// started before the sends. Usage: node recall.js ENDPOINTS TOPIC GROUP
// Prints one JSON line {recalled, kept, recallAnswer, secondRecallError, received: [...ids]}.
'use strict';
const { Producer, SimpleConsumer } = require('rocketmq-client-nodejs');

async function main() {
  const [endpoints, topic, group] = process.argv.slice(2);
  const consumer = new SimpleConsumer({
    endpoints, consumerGroup: group, subscriptions: new Map().set(topic, '*'), awaitDuration: 2000,
  });
  await consumer.startup();
  await consumer.receive(16, 20000); // the group's first receive: it starts here
  const producer = new Producer({ endpoints, requestTimeout: 5000 });
  await producer.startup();
  const when = new Date(Date.now() + 3000);
  const first = await producer.send({ topic, body: Buffer.from('recalled'), deliveryTimestamp: when });
  const second = await producer.send({ topic, body: Buffer.from('kept'), deliveryTimestamp: when });
  const answer = await producer.recallMessage(topic, first.recallHandle);
  let secondRecallError = '';
  try {
    await producer.recallMessage(topic, first.recallHandle);
  } catch (err) {
    secondRecallError = String(err && err.message ? err.message : err);
  }
  await producer.shutdown();
  const received = new Set();
  const deadline = Date.now() + 30000;
  while (!received.has(second.messageId) && Date.now() < deadline) {
    for (const m of await consumer.receive(16, 20000)) {
      received.add(m.messageId);
      await consumer.ack(m);
    }
  }
  for (const m of await consumer.receive(16, 20000)) received.add(m.messageId); // anything more
  await consumer.shutdown();
  console.log(JSON.stringify({
    recalled: first.messageId, kept: second.messageId, recallAnswer: answer.messageId, secondRecallError,
    handles: [first.recallHandle, second.recallHandle], received: [...received],
  }));
}

main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
