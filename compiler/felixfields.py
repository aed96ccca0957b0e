"""FelixConfiguration spec fields hepbpf accepts without acting on them.

calicoctl rejects unknown fields; so do we. Only the failsafe port lists
affect hepbpf; every other field of Calico's FelixConfigurationSpec
(api/pkg/apis/projectcalico/v3/felixconfig.go) is read and ignored.
"""

FELIX_CONFIGURATION_FIELDS = frozenset(
    """
    useInternalDataplaneDriver dataplaneDriver dataplaneWatchdogTimeout ipv6Support
    routeRefreshInterval interfaceRefreshInterval iptablesRefreshInterval
    iptablesPostWriteCheckInterval iptablesLockFilePath iptablesLockTimeout
    iptablesLockProbeInterval featureDetectOverride featureGates ipsetsRefreshInterval
    maxIpsetSize iptablesBackend xdpRefreshInterval netlinkTimeout metadataAddr metadataPort
    openstackRegion interfacePrefix interfaceExclude chainInsertMode defaultEndpointToHostAction
    iptablesFilterAllowAction iptablesMangleAllowAction iptablesFilterDenyAction
    logPrefix logFilePath logSeverityFile logSeverityScreen logSeveritySys logDebugFilenameRegex
    ipipEnabled ipipMTU vxlanEnabled vxlanMTU vxlanMTUV6 vxlanPort vxlanVNI allowVXLANPacketsFromWorkloads
    allowIPIPPacketsFromWorkloads reportingInterval reportingTTL endpointReportingEnabled
    endpointReportingDelay endpointStatusPathPrefix iptablesMarkMask disableConntrackInvalidCheck
    healthEnabled healthHost healthPort healthTimeoutOverrides prometheusMetricsEnabled
    prometheusMetricsHost prometheusMetricsPort prometheusGoMetricsEnabled
    prometheusProcessMetricsEnabled prometheusWireGuardMetricsEnabled
    prometheusMetricsCAFile prometheusMetricsCertFile prometheusMetricsKeyFile
    usageReportingEnabled usageReportingInitialDelay usageReportingInterval natPortRange
    natOutgoingAddress natOutgoingExclusions deviceRouteSourceAddress deviceRouteSourceAddressIPv6
    deviceRouteProtocol removeExternalRoutes externalNodesCIDRList debugMemoryProfilePath
    debugDisableLogDropping debugSimulateCalcGraphHangAfter debugSimulateDataplaneHangAfter
    debugSimulateDataplaneApplyDelay debugHost debugPort iptablesNATOutgoingInterfaceFilter
    sidecarAccelerationEnabled xdpEnabled genericXDPEnabled nftablesMode nftablesRefreshInterval
    nftablesFilterAllowAction nftablesMangleAllowAction nftablesFilterDenyAction nftablesMarkMask
    bpfEnabled bpfDisableUnprivileged bpfLogLevel bpfLogFilters bpfCTLBLogFilter
    bpfDataIfacePattern bpfL3IfacePattern bpfConnectTimeLoadBalancingEnabled
    bpfConnectTimeLoadBalancing bpfHostNetworkedNATWithoutCTLB bpfExternalServiceMode
    bpfDSROptoutCIDRs bpfExtToServiceConnmark bpfKubeProxyIptablesCleanupEnabled
    bpfKubeProxyMinSyncPeriod bpfKubeProxyEndpointSlicesEnabled bpfPSNATPorts
    bpfMapSizeNATFrontend bpfMapSizeNATBackend bpfMapSizeNATAffinity bpfMapSizeRoute
    bpfMapSizeConntrack bpfMapSizeConntrackScaling bpfMapSizeConntrackCleanupQueue
    bpfMapSizeIPSets bpfMapSizeIfState bpfHostConntrackBypass bpfEnforceRPF
    bpfPolicyDebugEnabled bpfForceTrackPacketsFromIfaces bpfDisableGROForIfaces
    bpfExcludeCIDRsFromNAT bpfRedirectToPeer bpfAttachType bpfProfiling bpfConntrackCleanupMode
    bpfConntrackLogLevel bpfConntrackTimeouts bpfJITHardening bpfMaglevMaxEndpointsPerService
    bpfMaglevMaxServices bpfExportBufferSizeMB routeSource routeTableRange routeTableRanges
    routeSyncDisabled serviceLoopPrevention workloadSourceSpoofing mtuIfacePattern
    floatingIPs windowsManageFirewallRules wireguardEnabled wireguardEnabledV6
    wireguardListeningPort wireguardListeningPortV6 wireguardRoutingRulePriority
    wireguardInterfaceName wireguardInterfaceNameV6 wireguardMTU wireguardMTUV6
    wireguardHostEncryptionEnabled wireguardKeepAlive wireguardThreadingEnabled
    awsSrcDstCheck awsRequestTimeout flowLogsFlushInterval flowLogsEnableHostEndpoint
    flowLogsEnableNetworkSets flowLogsMaxOriginalIPsIncluded flowLogsCollectorDebugTrace
    flowLogsGoldmaneServer flowLogsLocalReporter flowLogsPolicyEvaluationMode
    flowLogsPolicyScope kubeNodePortRanges logActionRateLimit logActionRateLimitBurst
    policySyncPathPrefix ipForwarding goGCThreshold goMemoryLimitMB goMaxProcs
    programClusterRoutes ipsetsRefreshIntervalV6 cgroupV2Path requireMTUFile
    """.split()
)
