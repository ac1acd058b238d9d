import BatonCore
import Testing

@Suite("NATS server advice")
struct NATSServerAdviceTests {
    @Test func replicatedLeasesOnA29ClusterAreWarnedAbout() {
        let warning = NATSServerAdvice.clusteredCompareAndSetWarning(serverVersion: "2.9.10", clustered: true, replicas: 3)
        #expect(warning?.contains("nats-server 2.9.10 may accept two compare-and-set writes at once") == true)
        #expect(warning?.contains("2.11 or later") == true)
        #expect(NATSServerAdvice.clusteredCompareAndSetWarning(serverVersion: "v2.10.14", clustered: true, replicas: 3) != nil)
    }

    @Test func fineVersionsSingleServersAndR1AreNot() {
        #expect(NATSServerAdvice.clusteredCompareAndSetWarning(serverVersion: "2.11.0", clustered: true, replicas: 3) == nil)
        #expect(NATSServerAdvice.clusteredCompareAndSetWarning(serverVersion: "2.15.1", clustered: true, replicas: 3) == nil)
        #expect(NATSServerAdvice.clusteredCompareAndSetWarning(serverVersion: "2.9.10", clustered: false, replicas: 3) == nil)
        #expect(NATSServerAdvice.clusteredCompareAndSetWarning(serverVersion: "2.9.10", clustered: true, replicas: 1) == nil)
        #expect(NATSServerAdvice.clusteredCompareAndSetWarning(serverVersion: "nonsense", clustered: true, replicas: 3) == nil)
    }
}
