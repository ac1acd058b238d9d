/// Reading unit states out of systemd's property messages.
enum UnitStateReading {
    /// Properties.GetAll on the unit's `org.freedesktop.systemd1.Unit` interface: one round trip
    /// and one consistent snapshot of the three states.
    static func getAll(_ unit: String) -> MethodCall {
        MethodCall(
            path: SystemdObjects.unitPath(unit), interface: SystemdObjects.propertiesInterface, member: "GetAll",
            arguments: [.string(SystemdObjects.unitInterface)], label: "GetAll(\(unit))", unit: unit)
    }

    static func parseGetAll(_ reader: MessageReader) throws -> UnitState {
        var state = UnitState(loadState: "", activeState: UnitActiveState(rawValue: ""), subState: "")
        try reader.dictionary { key in try read(key, reader, into: &state) }
        guard !state.loadState.isEmpty, !state.activeState.rawValue.isEmpty else {
            throw MessageReader.Failure(reason: "no LoadState/ActiveState in the unit's properties")
        }
        return state
    }

    /// PropertiesChanged(s interface, a{sv} changed, as invalidated), merged into `last`; nil
    /// when the signal is about another interface.
    static func parsePropertiesChanged(_ reader: MessageReader, merging last: UnitState) throws -> UnitState? {
        guard try reader.string() == SystemdObjects.unitInterface else { return nil }
        var state = last
        try reader.dictionary { key in try read(key, reader, into: &state) }
        return state
    }

    private static func read(_ key: String, _ reader: MessageReader, into state: inout UnitState) throws -> Bool {
        switch key {
        case "LoadState":
            guard let value = try reader.variantString() else { return false }
            state.loadState = value
        case "ActiveState":
            guard let value = try reader.variantString() else { return false }
            state.activeState = UnitActiveState(rawValue: value)
        case "SubState":
            guard let value = try reader.variantString() else { return false }
            state.subState = value
        default:
            return false
        }
        return true
    }
}
