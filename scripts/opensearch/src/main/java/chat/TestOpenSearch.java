package chat;

import static org.codelibs.opensearch.runner.OpenSearchRunner.newConfigs;

import org.codelibs.opensearch.runner.OpenSearchRunner;

/**
 * One OpenSearch node for tests: {@code TestOpenSearch <dir> <http port>}.
 * Prints {@code OPENSEARCH_READY} once the cluster is yellow, then serves
 * until the process is killed. (The runner's own main closes its nodes as
 * soon as they are built.)
 */
public final class TestOpenSearch {
    public static void main(String[] args) throws Exception {
        String dir = args[0];
        int port = Integer.parseInt(args[1]);
        OpenSearchRunner runner = new OpenSearchRunner();
        // The runner looks for a free port from baseHttpPort + 1 up to this.
        runner.setMaxHttpPort(port + 1);
        runner.onBuild((number, settings) -> {
            settings.put("http.port", String.valueOf(port));
            settings.put("network.host", "127.0.0.1");
            settings.put("discovery.type", "single-node");
            // A test machine's disk fills with other tests' files: no
            // watermark may block index creation or writes.
            settings.put("cluster.routing.allocation.disk.threshold_enabled", "false");
        });
        // Node 1 listens on baseHttpPort + 1 unless http.port says otherwise.
        runner.build(newConfigs().clusterName("chat-test").numOfNode(1).basePath(dir).baseHttpPort(port - 1));
        runner.ensureYellow();
        System.out.println("OPENSEARCH_READY http://127.0.0.1:" + port);
        System.out.flush();
        Thread.currentThread().join();
    }
}
