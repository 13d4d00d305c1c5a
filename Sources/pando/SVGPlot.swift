import PandoStatus

/// The per-round plot lives in PandoStatus (the coordinator's status page draws it too).
typealias SVGPlot = PandoStatus.SVGPlot
