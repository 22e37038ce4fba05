// The whole deployment of the insights API: `azd up` provisions this, then deploys the app.
// Subscription scope: it creates the resource group, then everything inside it (app.bicep).
// Resources are inline (no registry modules), so the test suite's offline checks see every
// property (tests/test_deploy.py).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names the resource group and seeds resource names.')
param environmentName string

@minLength(1)
@description('Azure region of every resource: one where Flex Consumption runs Python 3.13.')
// Microsoft's list (az functionapp list-flexconsumption-locations --runtime python
// --runtime-version 3.13); it grows over time: add a region here and in tests/deploy_rules.py.
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the user (or pipeline) that deploys: gets table data rights, so `manage.py load`, `export`, `migrate` work against the deployed table. Empty: none.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
@description('What principalId is: a person running azd, or a pipeline\'s service principal.')
param principalType string = 'User'

@allowed([
  512
  2048
  4096
])
@description('Memory of each Flex Consumption instance, in MB.')
param instanceMemoryMB int = 2048

@minValue(40)
@maxValue(1000)
@description('Most instances the app scales out to.')
param maximumInstanceCount int = 100

@minValue(1)
@maxValue(1000)
@description('Most HTTP requests one instance works on at once (functionAppConfig.scaleAndConcurrency.triggers.http.perInstanceConcurrency): derived from measured CPU per answer, docs/operations.md "Concurrency".')
param httpPerInstanceConcurrency int = 5

@minValue(0)
@maxValue(20)
@description('Instances of the HTTP group kept running (always ready): 0 scales to zero; 1 or more removes the cold start for that many instances\' worth of load and is billed while idle (docs/operations.md).')
param alwaysReadyInstances int = 0

@description('Where alert mail goes (an action group with this e-mail receiver). Empty: the alert rules exist and show in the portal, and no mail is sent.')
param alertEmail string = ''

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
@description('Redundancy of the insights data (the app\'s own storage is always LRS: it holds nothing that cannot be redeployed).')
param insightsStorageSku string = 'Standard_LRS'

@description('INSIGHTS_TABLE_NAME: the table the insights live in.')
param insightsTableName string = 'insights'

// ---- the app's token validation: AUTH_* (docs/settings.md; `manage.py entra-setup` fills them)

@minLength(1)
@description('AUTH_ALLOWED_TENANTS: customer tenant GUIDs, comma-separated, or * for any tenant. No default: an app without it would refuse every call.')
param authAllowedTenants string

@minLength(1)
@description('AUTH_AUDIENCES: the API\'s App ID URI and client id (manage.py entra-setup sets them).')
param authAudiences string

@description('AUTH_ALLOWED_CLIENT_APPS: client app ids allowed to call (the connector, the chat tools). Empty: any.')
param authAllowedClientApps string = ''

@description('AUTH_AUTHORITY: where OpenID metadata is read.')
param authAuthority string = 'https://login.microsoftonline.com'

@description('AUTH_REQUIRED_SCOPES: a delegated token needs one of these.')
param authRequiredScopes string = 'user_impersonation'

@description('AUTH_REQUIRED_ROLES: an app-only reader needs one of these app roles (empty: app-only readers refused).')
param authRequiredRoles string = ''

@description('AUTH_TOKEN_VERSIONS: accepted access-token versions.')
param authTokenVersions string = '1.0,2.0'

@description('AUTH_LEEWAY_SECONDS: clock-skew leeway.')
param authLeewaySeconds string = '60'

@description('AUTH_WRITER_HOME_TENANTS: the partner\'s own tenant(s), whose services may write.')
param authWriterHomeTenants string = ''

@description('AUTH_WRITER_ROLES: the app role a writer token carries.')
param authWriterRoles string = 'Insights.Write'

@description('AUTH_WRITER_CLIENT_APPS: the partner services\' app ids allowed to write.')
param authWriterClientApps string = ''

@description('AUTH_WRITER_TENANT_GRANTS: which customer tenants each writer app may write (appId=t1|t2;appId=*).')
param authWriterTenantGrants string = ''

@description('PURGE_SCHEDULE: when the purge_expired timer runs (six-field NCRONTAB, UTC).')
param purgeSchedule string = '0 30 2 * * *'

var tags = {
  'azd-env-name': environmentName
}

resource group 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module app 'app.bicep' = {
  name: 'insights-app'
  scope: group
  params: {
    location: location
    tags: tags
    resourceToken: toLower(uniqueString(subscription().id, environmentName, location))
    principalId: principalId
    principalType: principalType
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    alwaysReadyInstances: alwaysReadyInstances
    alertEmail: alertEmail
    insightsStorageSku: insightsStorageSku
    insightsTableName: insightsTableName
    auth: {
      AUTH_AUTHORITY: authAuthority
      AUTH_AUDIENCES: authAudiences
      AUTH_ALLOWED_TENANTS: authAllowedTenants
      AUTH_ALLOWED_CLIENT_APPS: authAllowedClientApps
      AUTH_REQUIRED_SCOPES: authRequiredScopes
      AUTH_REQUIRED_ROLES: authRequiredRoles
      AUTH_TOKEN_VERSIONS: authTokenVersions
      AUTH_LEEWAY_SECONDS: authLeewaySeconds
      AUTH_WRITER_HOME_TENANTS: authWriterHomeTenants
      AUTH_WRITER_ROLES: authWriterRoles
      AUTH_WRITER_CLIENT_APPS: authWriterClientApps
      AUTH_WRITER_TENANT_GRANTS: authWriterTenantGrants
    }
    purgeSchedule: purgeSchedule
  }
}

// azd writes these into the environment (.azure/<env>/.env): the deploy step finds the app by
// SERVICE_API_NAME, the smoke call uses SERVICE_API_URI, and the data commands run from a laptop
// read INSIGHTS_STORAGE_ACCOUNT_URL and INSIGHTS_TABLE_NAME.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = group.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.functionAppName
output SERVICE_API_NAME string = app.outputs.functionAppName
output SERVICE_API_URI string = app.outputs.functionAppUri
output INSIGHTS_STORAGE_ACCOUNT_URL string = app.outputs.insightsTableEndpoint
output INSIGHTS_TABLE_NAME string = insightsTableName
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = app.outputs.identityClientId
output APPLICATIONINSIGHTS_NAME string = app.outputs.applicationInsightsName
