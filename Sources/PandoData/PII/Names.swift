// Default name lists for PIIScrubber.
//
// Written by hand for Pando: common US given names (a mix of names frequent among
// US school children of the last decades) and common US surnames, the latter loosely
// following the rank order of the public-domain US Census 2010 surname list. Names
// that are also common English words ("May", "Will", "Brown", "Young", ...) are kept
// in `ambiguousNames`; the scrubber treats them as names only in context (see
// PIIScrubber's policy notes). All entries are lowercase ASCII.

/// Built-in name lists used by `PIIScrubber.Configuration.default`.
public enum PIIDefaultNames {
    /// Common US given names (lowercase).
    public static let firstNames: [String] = """
    aaliyah aaron abigail adam adrian aiden alan albert alejandro alexa alexander alexis alice \
    allison alyssa amanda amber amelia amy andrea andrew angel angela anna anthony antonio \
    ariana arianna arthur ashley aubrey audrey austin ava avery barbara benjamin beth betty \
    brandon brayden brian brianna brittany brooke bryan caleb cameron camila carlos carmen \
    carol caroline carter catherine charles charlie charlotte chloe christina christopher \
    claire cody colton connor cooper cynthia daniel daniela david deborah debra denise derek \
    destiny diana diego dominic donald donna dorothy dylan easton edward elena eli elijah \
    elizabeth ella ellie emily emma eric erin ethan eva evan evelyn ezra gabriel gabriella \
    gavin genesis george gianna grayson hailey hannah harper hayden heather helen henry \
    hudson ian isaac isabel isabella isaiah jackson jacob jade jaden james jamie jared jasmine \
    jason jayden jeffrey jennifer jeremiah jeremy jessica jesus jocelyn joel john jonathan \
    jose joseph joshua josiah joyce juan julia julian justin kaitlyn karen kathleen kayla \
    kaylee keith kelly kennedy kenneth kevin kimberly kyle landon laura lauren layla leah \
    leo levi liam lillian lincoln linda lisa logan lucas lucy luis luke lydia madeline \
    madison makayla marcus margaret maria mariah marie marissa matthew maya megan melissa \
    mia micah michael michelle miguel mila natalie nathan nathaniel nevaeh nicholas nicole \
    noah nolan nora olivia oliver owen paisley patricia paul peyton rachel rebecca riley \
    robert ronald ruby ryan samantha samuel sandra sarah savannah scarlett sebastian sharon \
    sophia sophie stephanie steven susan sydney tammy taylor teresa thomas timothy tristan \
    tyler valentina valeria victoria vincent violet wyatt xavier zachary zoe zoey \
    deshawn jamal keisha latoya darnell tyrone imani aaliyah malik jalen \
    mei wei jun hiroshi yuki priya arjun ananya rohan aditya fatima omar yusuf aisha \
    ahmed hassan sofia mateo santiago valentina ximena camilo lucia diego
    """.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)

    /// Common US surnames (lowercase).
    public static let lastNames: [String] = """
    smith johnson williams jones garcia miller davis rodriguez martinez hernandez lopez \
    gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson harris \
    sanchez clark ramirez lewis robinson walker allen hernandez wright scott torres nguyen \
    flores adams nelson baker hall rivera campbell mitchell carter roberts gomez phillips \
    evans turner diaz parker cruz edwards collins reyes stewart morris morales murphy \
    rogers gutierrez ortiz morgan cooper peterson kelly howard ramos kim cox richardson \
    watson jimenez bennett alvarez castillo sanders patel myers ross foster jimenez powell \
    jenkins perry russell sullivan fisher henderson coleman simmons patterson jordan \
    reynolds hamilton graham gonzales alexander bryant griffin wallace west hayes \
    chavez gibson ellis stevens murray ford marshall owens mcdonald harrison ruiz kennedy \
    wells alvarez woods mendoza castro olson webb washington tucker freeman burns henry \
    vasquez snyder simpson crawford jimenez porter mason shaw gordon wagner hunter romero \
    hicks dixon hunt palmer robertson holmes meyer boyd mills warren fox rose rice moreno \
    schmidt patel ferguson nichols herrera medina ryan fernandez weaver daniels stephens \
    gardner payne kelley dunn pierce arnold tran spencer peters hawkins grant hansen \
    castro hoffman hart elliott cunningham knight bradley carroll hudson duncan armstrong \
    berry andrews johnston ray lane riley carpenter perkins aguilar silva richards willis \
    matthews chapman lawrence garza vargas watkins wheeler larson carlson harper george \
    greene burke guzman morrison munoz jacobs obrien o'brien lawson franklin lynch bishop \
    carr salazar austin mendez gilbert jensen williamson montgomery harvey oliver howell \
    dean hanson weber garrett sims burton fuller soto mccoy welch chen schultz walters \
    reid fields walsh little fowler bowman davidson may chang wang li zhang liu yang huang \
    wu zhou singh kumar shah khan ali ahmed hussain tanaka sato suzuki nakamura yamamoto \
    kowalski novak muller schneider fischer weiss horvath popescu ivanov petrov \
    okafor okonkwo adeyemi mensah
    """.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)

    /// Listed names that are also everyday English words (or months, colours, places).
    /// Matched as names only inside a "First Last" sequence or after a title (Mr., Ms., ...).
    public static let ambiguousNames: [String] = """
    may will june april august grace hope faith joy rose lily ivy dawn summer autumn sky \
    bill mark pat art sue rich frank rob jack gene chase hunter mason \
    brown white green black gray grey young king long hill wood woods stone lane rice bell \
    cook price banks miles page reed hall ward fox bush day hunt ford ray west may little \
    rivers jordan austin lincoln hudson paris christian major angel destiny \
    genesis jesus mills \
    fields berry shaw wells knight dean gordon love
    """.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
}
