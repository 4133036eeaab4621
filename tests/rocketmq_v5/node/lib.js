// Shared by the matrix scripts (tests/rocketmq_v5/test_matrix.py): a SimpleConsumer whose group has made
// its first receive, receive-and-ack until given ids arrived, and the one JSON line each script prints.
'use strict';
const { SimpleConsumer, FilterExpression } = require('rocketmq-client-nodejs');
const { FilterType } = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb');

// A consumer of TOPIC in GROUP whose first receive is made (a new group starts there) and came back empty.
async function started(endpoints, group, topic, expression = '*', sql = false) {
  const filter = new FilterExpression(expression, sql ? FilterType.SQL : FilterType.TAG);
  const consumer = new SimpleConsumer({
    endpoints, consumerGroup: group, subscriptions: new Map().set(topic, filter), awaitDuration: 1000,
  });
  await consumer.startup();
  const first = await consumer.receive(32, 20000);
  if (first.length) throw new Error(`the new group ${group} received ${first.length} earlier messages`);
  return consumer;
}

// Receive and ack until every id of WANT was received (or the deadline); returns the received views by id.
async function drain(consumer, want, ms = 60000) {
  const got = new Map();
  const deadline = Date.now() + ms;
  while ([...want].some((id) => !got.has(id)) && Date.now() < deadline) {
    for (const m of await consumer.receive(32, 20000)) {
      got.set(m.messageId, m);
      await consumer.ack(m);
    }
  }
  return got;
}

// The ids of what one more receive returns (acknowledged): what a group still had to get.
async function leftover(consumer) {
  const rest = await consumer.receive(32, 20000);
  for (const m of rest) await consumer.ack(m);
  return rest.map((m) => m.messageId);
}

// Run MAIN and print its result as one JSON line; exit 1 with the error on stderr if it throws.
function run(main) {
  main().then((out) => { console.log(JSON.stringify(out)); process.exit(0); },
    (err) => { console.error(err); process.exit(1); });
}

module.exports = { started, drain, leftover, run };
