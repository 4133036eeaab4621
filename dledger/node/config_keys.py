"""What a properties file's keys that no loader reads mean: ignored, a misspelling, or a warning.

A real RocketMQ broker.conf carries many keys this project does not use; a misspelled key that we do use
must never be dropped quietly (a misspelled `flushDiskType` would leave the node on async flush). So each
key that no loader reads is, in this order:
- one of `ROCKETMQ_BROKER_KEYS` (RocketMQ broker and store settings this project does not use): accepted
  quietly;
- within a small edit distance of a key that is read (`flushDiskTpye`, `dlegerPeers`): an error naming the
  key and the likely one (`NodeConfig.from_properties` raises `ConfigError`);
- anything else: one warning line naming every such key.
This module only classifies; it has no I/O and raises nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ROCKETMQ_BROKER_KEYS", "classify_unknown_keys", "edit_distance", "likely_key"]

#: RocketMQ broker / store / proxy keys that a broker.conf may carry and that nothing here reads.
ROCKETMQ_BROKER_KEYS: frozenset[str] = frozenset(
    {
        # cluster identity and name server
        "brokerClusterName", "brokerName", "brokerId", "brokerIP1", "brokerIP2", "brokerPermission",
        "namesrvAddr", "fetchNamesrvAddrByAddressServer", "rocketmqHome", "region", "listenPort",
        "haListenPort", "haSendHeartbeatInterval", "haHousekeepingInterval", "haTransferBatchSize",
        "brokerRole", "enableDLegerCommitLog", "dLegerEnableBatchPush", "enableControllerMode",
        "controllerAddr", "enableSlaveActingMaster", "clusterTopicEnable", "brokerTopicEnable",
        "autoCreateSubscriptionGroup", "traceTopicEnable", "msgTraceTopicName", "aclEnable",
        "enablePropertyFilter", "enableCalcFilterBitMap", "filterSupportRetry", "slaveReadEnable",
        "isEnableBatchPush", "duplicationEnable", "enableNotifyAfterPopOrderLockRelease",
        # store paths and files
        "storePathCommitLog", "storePathConsumeQueue", "storePathIndex", "storeCheckpoint", "abortFile",
        "storePathDLedgerCommitLog", "storePathEpochFile", "mapedFileSizeConsumeQueue",
        "mappedFileSizeConsumeQueue", "mappedFileSizeTimerLog", "mapedFileSizeTimerLog",
        "mappedFileSizeConsumeQueueExt", "enableConsumeQueueExt", "maxIndexNum", "maxHashSlotNum",
        "messageIndexEnable", "messageIndexSafe", "deleteWhen", "destroyMapedFileIntervalForcibly",
        "redeleteHangedFileInterval", "cleanResourceInterval", "cleanFileForciblyEnable",
        "deleteCommitLogFilesInterval", "deleteConsumeQueueFilesInterval", "diskFallRecorded",
        "storeType", "warmMapedFileEnable",
        # flushing and page cache (the commit log's own flushing is flushDiskType / flushIntervalCommitLog)
        "flushCommitLogLeastPages", "flushConsumeQueueLeastPages", "flushCommitLogThoroughInterval",
        "flushConsumeQueueThoroughInterval", "flushIntervalConsumeQueue", "flushCommitLogTimed",
        "flushLeastPagesWhenWarmMapedFile", "commitIntervalCommitLog", "commitCommitLogLeastPages",
        "commitCommitLogThoroughInterval", "transientStorePoolEnable", "transientStorePoolSize",
        "fastFailIfNoBufferInStorePool", "syncFlushTimeout", "osPageCacheBusyTimeOutMills",
        "useReentrantLockWhenPutMessage", "transferMsgByHeap", "accessMessageInMemoryMaxRatio",
        "maxTransferBytesOnMessageInMemory", "maxTransferCountOnMessageInMemory",
        "maxTransferBytesOnMessageInDisk", "maxTransferCountOnMessageInDisk",
        # thread pools, queues and network
        "sendMessageThreadPoolNums", "pullMessageThreadPoolNums", "processReplyMessageThreadPoolNums",
        "queryMessageThreadPoolNums", "adminBrokerThreadPoolNums", "clientManageThreadPoolNums",
        "consumerManageThreadPoolNums", "heartbeatThreadPoolNums", "endTransactionThreadPoolNums",
        "sendThreadPoolQueueCapacity", "pullThreadPoolQueueCapacity", "waitTimeMillsInSendQueue",
        "waitTimeMillsInPullQueue", "serverWorkerThreads", "serverCallbackExecutorThreads",
        "serverSelectorThreads", "serverSocketSndBufSize", "serverSocketRcvBufSize",
        "serverPooledByteBufAllocatorEnable", "useEpollNativeSelector", "clientWorkerThreads",
        "longPollingEnable", "shortPollingTimeMills", "notifyConsumerIdsChangedEnable",
        "registerBrokerTimeoutMills", "registerNameServerPeriod", "forceRegister", "compressedRegister",
        # features this project serves with its own settings (or not at all)
        "messageDelayLevel", "timerWheelEnable", "timerMaxDelaySec", "timerPrecisionMs",
        "enablePopBufferMerge", "popCkStayBufferTime", "enableRetryTopicV2", "enableLmq",
        "enableMultiDispatch", "enableScheduleMessageStats", "enableDetailStat", "autoDeleteUnusedStats",
        "rejectTransactionMessage", "transactionCheckMax", "maxDelayTime", "checkCRCOnRecover",
        "offsetCheckInSlave", "useServerSideResetOffset",
        "enableTopicQueueIdRange", "defaultQueryMaxNum", "debugLockEnable", "startAcceptSendRequestTimeStamp",
        # RocketMQ keys that `dledger broker` reads (quiet for `dledger node` given the same file)
        "autoCreateTopicEnable", "defaultTopicQueueNums", "diskMaxUsedSpaceRatio", "diskSpaceWarningLevelRatio",
        "maxReconsumeTimes", "accessKey", "secretKey", "transactionTimeOut", "transactionCheckInterval",
        "defaultInvisibleTimeMills", "grpcServerPort",
        # RocketMQ 5 proxy
        "proxyMode", "remotingListenPort", "grpcBossLoopNum", "grpcWorkerLoopNum", "grpcThreadPoolNums",
        "grpcThreadPoolQueueCapacity", "enableGrpcEpoll", "grpcMaxInboundMessageSize",
        "grpcClientProducerMaxAttempts", "enableTopicMessageTypeCheck",
    }
)  # fmt: skip


def edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of neighbours."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]


def likely_key(key: str, known: Iterable[str]) -> str | None:
    """The known key `key` most likely misspells (case ignored; at most 2 edits, 1 for keys under 8
    characters), or None."""
    best: tuple[int, str] | None = None
    for candidate in known:
        limit = 2 if len(candidate) >= 8 else 1
        distance = edit_distance(key.lower(), candidate.lower())
        if distance <= limit and (best is None or distance < best[0]):
            best = (distance, candidate)
    return None if best is None else best[1]


def classify_unknown_keys(keys: Iterable[str], known: Iterable[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """The keys of `keys` that are neither known nor RocketMQ's: (misspelled, as (key, likely key)), and the
    rest, each sorted."""
    known_sorted = sorted(set(known))
    unknown = sorted(k for k in set(keys) - set(known_sorted) if k not in ROCKETMQ_BROKER_KEYS)
    misspelled: list[tuple[str, str]] = []
    rest: list[str] = []
    for key in unknown:
        likely = likely_key(key, known_sorted)
        if likely is None:
            rest.append(key)
        else:
            misspelled.append((key, likely))
    return misspelled, rest
